"""daolinet controller: os-ken OpenFlow app, policy API and agent stream hub."""
