"""Methods beyond the paper, each reusing aavae.py's model, data path and loop through aavae.train(args, recipe):
the SimCLR and supervised controls, IWAE, the adversarial autoencoder and its uses, and k-means clustering."""
