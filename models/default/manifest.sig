{
  "key": "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E=",
  "signature": "XASes0u6OXlhL1ku363tAi/c88+mNKRM21fWlfi33WlJ3VxfMn0GaOz2VCOuAm6OYCA5y55s2j2ikKDlMENgBw=="
}
