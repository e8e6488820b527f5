"""The in-app WebSocket gateway: authenticates sockets and forwards in-app notifications to them."""
