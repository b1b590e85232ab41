// placeholder: filled by the Swift-library work (issue 3)
