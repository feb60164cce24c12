"""`sync` workflows: snapshot + change capture from a source into destinations (connylabs + Conduit)."""
