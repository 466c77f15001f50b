"""Task-parameterised Gymnasium environments for meta-RL; importing registers them."""
