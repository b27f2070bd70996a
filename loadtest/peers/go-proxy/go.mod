module greenhttp/goproxy

go 1.19
