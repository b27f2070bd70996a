module greenhttp/tlsload

go 1.19
