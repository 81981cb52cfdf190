"""Run folders: layout and checkpoints, the writer's lock, the resume guard, grouping runs over seeds."""
