"""Herald's domain: pure Python, no Ray import. Every rule of the engine lives here."""
