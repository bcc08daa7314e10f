"""Local stand-ins for outside services that the tests' real clients talk to over HTTP."""
