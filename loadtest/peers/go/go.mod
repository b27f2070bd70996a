module greenhttp/gopeer

go 1.19
