{
  "key": "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0=",
  "signature": "y7nkQBG0luNj4fgml0D/sYLH5CmuypNANyi5tkgRUsUULtTnVCtOXsUhMKwqgfcUA4wZdpatZG7X8GSxev42Bg=="
}
