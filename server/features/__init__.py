"""One module per LSP feature, each with `setup(server)` registering its methods once."""
