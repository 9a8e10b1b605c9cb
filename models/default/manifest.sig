{
  "key": "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E=",
  "signature": "WMeuPALYigkx3ZGis9zJU8KtYM3mVySWJfj6F12nfAjzcrhre+jx8EuqV3fF1PGzvWg/j+/UFibzdtUob/1xCw=="
}
