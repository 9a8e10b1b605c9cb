{
  "key": "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0=",
  "signature": "/VgYR/eVcuMC5u5jveKFTbOHxrgAjPI0sgDz3yTYsDVF7pKmjtjTa7H4+eE5sOcbEi8SLN7jt/wDNYsNzMOUBg=="
}
