"""Virtual devices: simulated peripherals, the world model and the fleet that runs real firmware."""
