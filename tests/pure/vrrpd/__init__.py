"""The Node and the edges of vrrpd, held to what operators rely on."""
