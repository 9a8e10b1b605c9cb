{
  "key": "ed25519:0mvBUHKOFefV1Gi7as8eoh7PpWUBU7GI47eDnzcJkkc=",
  "signature": "osqK8r/plDw+poj7zE2OIS007aJhySkaNqeNaBTOA9v00Cx4XMkU3MfKv+yh1WHM/dWGb62cClUK1OVv6pb2Ag=="
}
