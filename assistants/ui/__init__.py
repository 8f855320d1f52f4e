"""The only Chainlit-aware code besides `app.py`: rendering run events as messages and steps."""
