"""Edge circuits: exact path patching (the mechanism), edge attribution (EAP, EAP-IG) and edge circuit search built on them."""
