"""Test helpers shared by several test modules (models, exactness checks); not tests themselves."""
