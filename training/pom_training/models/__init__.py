"""The networks and what they minimise (Keras, TensorFlow): :mod:`.unet`, :mod:`.losses`. No I/O."""
