{
  "key": "ed25519:JqhKLMI7b/1mbX7GL4jnheZ9Qgz1t01ZPfKRqYTxtnc=",
  "signature": "Uq9dKzGSbHGaAh0qtGW0Ze/whWpkw+uozPK9DJGhAoyWtaAG2xxOEMzZ56ouQahhvoSOhN3MNyUyC80PkqXdCg=="
}
