{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "HTLPSLujh2KWEGImG1jtUYrBd64gyTR63+LAf8l+FMP7cxpNVm4ZSdPisTCEJkSxIgfQFLqqLH5ARgzxkZseAQ=="
}
