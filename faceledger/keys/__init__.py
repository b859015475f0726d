"""Keys kept outside the store: key files, the AES-GCM sealing they are used through, and the
template key that seals face templates. Nothing here reads or writes the database."""
