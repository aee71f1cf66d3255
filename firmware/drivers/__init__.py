"""Bus-level sensor drivers: each is handed its bus (machine.I2C / I2S / UART, or the sim
layer's stand-in) and never builds one; wiring comes from the board pin map."""
