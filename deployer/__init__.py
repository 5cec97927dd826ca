"""deployer."""
