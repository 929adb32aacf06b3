"""The blur detector: model definition, blur-frequency channel, checkpoints.

Lives in the worker package so a checkpoint written by training loads where no training
code is installed.
"""
