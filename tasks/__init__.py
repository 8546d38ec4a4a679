"""Task generators and their exact gold rewards. Imports nothing else of kinrl."""
