{
  "key": "ed25519:up/zgk5drL39cQmvhDPBcYFwE34t51s8Bmeoz4Tr4bI=",
  "signature": "RnH+4dPxcM0CaGtjoXQB5S8HbnxvIAkEIxBHh37KiXIAmsqljB9sP64jV4N502bAhKbUzOHvomVyh8AldxPVCg=="
}
