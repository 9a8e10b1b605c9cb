{
  "key": "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0=",
  "signature": "se0SpjoB3DXiAa87BX/uqVmsBuQNxZnrLk9CclUF9ih2HCCnSNEok6QEIJXEOAeEtAUNx+l18Oax2YjyS4qECQ=="
}
