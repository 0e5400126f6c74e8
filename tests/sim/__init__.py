"""Local simulators of Azure services for tests (ARM container groups, Key Vault, messaging)."""
