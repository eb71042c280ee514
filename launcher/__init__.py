"""Starting and supervising DistDGL clusters: emulated on one host, or real over ssh."""
