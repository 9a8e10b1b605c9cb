{
  "key": "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E=",
  "signature": "H18l8/Uv8Xm8AkaLd7SVhRmK7RVEm3dPfteCalq58Jw20714Z+JPfF/89xFoTwB+BRKwdlXJs8r+VKMqkkA0Cw=="
}
