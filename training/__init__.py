"""Offline training and evaluation for the pneumonia classifier (``python -m training``)."""
