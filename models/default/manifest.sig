{
  "key": "ed25519:CQwpClPq2PqeWSzD1g951r82d3mBZk4ZuhsikIEGmAw=",
  "signature": "Y0W+RDOKiezpFXqC5OgaJb5hswKUwURH4W+gJpJ6kr0k3qI/aDuUyzUMPn2J1iQj+v1QmI4vlHWoEAqwUEZlCA=="
}
