{
  "key": "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8=",
  "signature": "nqW6oQ36kfX5ksbWuEB0KsFW+GYz+rtzC8aPno2lbU0uKYzLf3xn6Up4np+1vn41ZjaiUPEVnt365VN9DKcABQ=="
}
