"""The evaluation tasks, one file each; every module here registers its task on import
(:func:`foundry3d.eval.task.tasks` imports them all). Adding a task is adding a file."""
