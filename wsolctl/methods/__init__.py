"""Built-in WSOL methods, each registered through the ``wsolctl.methods`` entry point group."""
