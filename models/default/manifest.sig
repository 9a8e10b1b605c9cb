{
  "key": "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E=",
  "signature": "ZDYoYzuKw1dcyQf5SyNIXfTQN+4wJsYqDSAG5bMItvIEFuwQijS1wZYPP+rrKi3wXxaqzp531z2qWDcCWC1TAw=="
}
