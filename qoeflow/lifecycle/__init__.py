"""Lifecycle algorithms: plain functions and classes on arrays and nn.Modules, no file I/O."""
