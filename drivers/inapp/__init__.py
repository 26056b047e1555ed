"""In-app channel: messages are stored in the recipient's inbox (``to.user_id``) through a storage port."""
