"""areal-myplugin: the ``myplugin`` reward for areal."""
