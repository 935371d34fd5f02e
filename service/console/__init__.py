"""The operations console (/console): its page and assets, and the charts' series."""
