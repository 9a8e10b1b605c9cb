{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "epYrZzgdhHAmoZSkJ66wM6Apab35Hw4nHT9uShHMmo3BhXZZkqnKB2eXodPW+V3WqB+vzbO0cWfkr/ioRTveBA=="
}
