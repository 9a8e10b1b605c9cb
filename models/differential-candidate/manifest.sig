{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "+GdIvTl6GZBw6yNjNoMi2ctI4hV1Bvtigcb7/vrP8oMgcE584l8EqmbEwH8dU5DEagmxGNpz9XeqsmG1VFT7Cw=="
}
