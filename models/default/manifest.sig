{
  "key": "ed25519:CQwpClPq2PqeWSzD1g951r82d3mBZk4ZuhsikIEGmAw=",
  "signature": "VlxHCo8hinlkxnA8ZenZhLh89GJTU47DG1eeI/oHeXZkxaVbl6y095inMi/kfnv+Viziv10T2IX0LW/lXz5IAg=="
}
