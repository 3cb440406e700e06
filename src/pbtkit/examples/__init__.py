"""Examples that ship with pbtkit; ``pbtkit demo`` runs them."""
