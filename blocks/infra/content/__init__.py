"""What people put into Blocks: rich text and attached files, checked before anything keeps them."""
