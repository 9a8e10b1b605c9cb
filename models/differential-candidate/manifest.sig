{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "YqoFkM2qg1EdKB70BrMW4Dci9r1WwzPkZhJtFSIk5XnwytOgYEBqacMU8eyLBV6HEG6Xj1UfEzxt04rdgQQeDQ=="
}
