"""Docker's remote network and IPAM drivers served by the agent."""
