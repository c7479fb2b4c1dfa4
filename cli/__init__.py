"""The installed `recsys` command: the core commands plus training (and serving)."""
