"""The parts of training the loop (`jaxseg.train`) is built from: optimizer and schedules
(`optim`), the train state (`state`), the pure jitted steps (`steps`) and the input feed
(`feed`)."""
