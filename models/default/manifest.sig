{
  "key": "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0=",
  "signature": "sY3R10SttBc6n8JXdFm3s7zx43GyXp9QFc4dSwYQSwZmzmHd08q75czPgiGiCAfQKB1VYJ3B2qZeGQP40KhtAQ=="
}
