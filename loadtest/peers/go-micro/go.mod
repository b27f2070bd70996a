module greenhttp/gomicro

go 1.19
