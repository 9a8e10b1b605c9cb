{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "vLjpH9H9cvF6jXcRc46sylIVZKiqCAs3/LGRjJHBjHetvkQzhBKzFpVx9oA9pOYnIj9kS/sGyz6wu9stdq3YAw=="
}
