"""Student kinds beyond the built-in ones, one file each: every module here registers its kind(s) on import
(:func:`foundry3d.models.student.student_kinds` imports them all). Adding a kind is adding a file."""
